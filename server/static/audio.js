// The audio library's three ways in: a file (XHR, for its upload progress), a typed text
// (text-to-speech with a preview player) and the microphone (MediaRecorder, then the
// same upload). The server answers a refusal as {errors: {field: message}} in the
// reader's language; it is shown under the field. On success the list is read again so the
// new file is listed with its measured length and loudness.
(function () {
  "use strict";
  var T = window.loaxaT;

  function showError(id, text) {
    var node = document.getElementById(id);
    if (!node) return;
    node.textContent = text || "";
    node.hidden = !text;
  }

  function firstError(body, fallback) {
    var errors = (body && body.errors) || {};
    var keys = Object.keys(errors);
    return keys.length ? errors[keys[0]] : fallback;
  }

  // XMLHttpRequest, not fetch: only it reports upload progress.
  function upload(blob, filename, progress, status, errorId, done) {
    var form = new FormData();
    form.append("file", blob, filename);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/audio/upload");
    xhr.responseType = "json";
    progress.hidden = false;
    progress.value = 0;
    showError(errorId, "");
    status.textContent = T("uploading");
    xhr.upload.addEventListener("progress", function (event) {
      if (!event.lengthComputable) return;
      progress.value = Math.round((100 * event.loaded) / event.total);
      if (event.loaded === event.total) status.textContent = T("processing");
    });
    xhr.addEventListener("load", function () {
      var body = xhr.response || {};
      if (xhr.status === 200 || xhr.status === 201) {
        progress.value = 100;
        status.textContent = T("uploaded") + ": " + body.filename + " · " + body.duration +
          " · " + body.loudness;
        done(body);
      } else {
        progress.hidden = true;
        status.textContent = "";
        showError(errorId, firstError(body, T("error") + " " + xhr.status));
      }
    });
    xhr.addEventListener("error", function () {
      progress.hidden = true;
      status.textContent = "";
      showError(errorId, T("network_error"));
    });
    xhr.send(form);
  }

  // The list of files is read again from the server and swapped in: the new file shows up
  // without reloading the page (which would lose the status and the speech preview).
  function refreshList() {
    var list = document.getElementById("audio-files");
    if (!list) return;
    fetch(window.location.pathname, { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("audio-files");
        if (fresh) list.replaceWith(fresh);
      });
  }

  // ------------------------------------------------------------ a chosen file
  var uploadForm = document.getElementById("upload-form");
  if (uploadForm) {
    uploadForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var input = document.getElementById("upload-file");
      var button = uploadForm.querySelector("button[type=submit]");
      if (!input.files.length) {
        upload(new Blob([]), "", document.getElementById("upload-progress"),
          document.getElementById("upload-status"), "upload-file-error", function () {});
        return;
      }
      button.disabled = true;
      var file = input.files[0];
      upload(file, file.name, document.getElementById("upload-progress"),
        document.getElementById("upload-status"), "upload-file-error", refreshList);
      window.setTimeout(function () { button.disabled = false; }, 1000);
    });
  }

  // ------------------------------------------------------------ text to speech
  var ttsForm = document.getElementById("tts-form");
  if (ttsForm) {
    ttsForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var status = document.getElementById("tts-status");
      var button = ttsForm.querySelector("button[type=submit]");
      showError("tts-text-error", "");
      status.textContent = T("loading");
      button.disabled = true;
      fetch("/audio/tts", {
        method: "POST",
        credentials: "same-origin",
        body: new URLSearchParams(new FormData(ttsForm)),
      })
        .then(function (response) {
          return response.json().then(function (body) { return { ok: response.ok, body: body }; });
        })
        .then(function (answer) {
          status.textContent = "";
          if (!answer.ok) {
            showError("tts-text-error", firstError(answer.body, T("error")));
            return;
          }
          document.getElementById("tts-spoken").textContent = answer.body.spoken;
          var player = document.getElementById("tts-player");
          player.src = answer.body.listen_url;
          document.getElementById("tts-result").hidden = false;
          status.textContent = T("speech_made") + ": " + answer.body.duration;
          refreshList();
        })
        .catch(function () { status.textContent = ""; showError("tts-text-error", T("network_error")); })
        .finally(function () { button.disabled = false; });
    });
  }

  // ------------------------------------------------------------ the microphone
  var start = document.getElementById("rec-start");
  if (start) {
    var stop = document.getElementById("rec-stop");
    var save = document.getElementById("rec-upload");
    var player = document.getElementById("rec-player");
    var status = document.getElementById("rec-status");
    var recorder = null;
    var chunks = [];
    var recording = null;
    if (!(navigator.mediaDevices && window.MediaRecorder)) {
      start.disabled = true;
      status.textContent = T("mic_unsupported");
    }
    start.addEventListener("click", function () {
      showError("rec-error", "");
      navigator.mediaDevices.getUserMedia({ audio: true }).then(function (stream) {
        chunks = [];
        recorder = new MediaRecorder(stream);
        recorder.addEventListener("dataavailable", function (e) { if (e.data.size) chunks.push(e.data); });
        recorder.addEventListener("stop", function () {
          stream.getTracks().forEach(function (track) { track.stop(); });
          recording = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
          player.src = URL.createObjectURL(recording);
          player.hidden = false;
          save.hidden = false;
          status.textContent = "";
          start.disabled = false;
          stop.disabled = true;
          save.focus();
        });
        recorder.start();
        start.disabled = true;
        stop.disabled = false;
        stop.focus();
        status.textContent = T("recording");
      }, function () { showError("rec-error", T("mic_denied")); });
    });
    stop.addEventListener("click", function () { if (recorder) recorder.stop(); });
    save.addEventListener("click", function () {
      if (!recording) return;
      var type = recording.type.indexOf("ogg") >= 0 ? "ogg" : "webm";
      var stamp = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, "");
      save.disabled = true;
      upload(recording, "ghi-am-" + stamp + "." + type, document.getElementById("rec-progress"),
        status, "rec-error", refreshList);
    });
  }
})();
