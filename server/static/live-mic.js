// Live from the microphone: capture (getUserMedia), encode Opus in the browser (WebCodecs
// AudioEncoder, 60 ms frames at 16 kbit/s), send each packet over the API's WebSocket.
// Each binary message: capture time in ms since the epoch (u64, big-endian), the frame's
// length in 48 kHz samples (u16), then the Opus packet. "stop" ends the session.
(function () {
  "use strict";
  var T = window.loaxaT || function (k) { return k; };
  var form = document.getElementById("live-form");
  if (!form) return;
  var goButton = document.getElementById("go-live");
  var stopButton = document.getElementById("stop-live");
  var status = document.getElementById("live-status");
  var errorBox = document.getElementById("live-error");
  var meter = document.getElementById("live-level");
  var running = null;

  function say(text) { status.textContent = text; }
  function fail(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
    stop("failed");
  }

  function targets() {
    var picked = { stations: [], groups: [], areas: [] };
    form.querySelectorAll("input[type=checkbox]:checked").forEach(function (box) {
      picked[box.name].push(box.value);
    });
    return picked;
  }

  function level(data) {
    var samples = new Float32Array(data.numberOfFrames);
    data.copyTo(samples, { planeIndex: 0, format: "f32-planar" });
    var sum = 0;
    for (var i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
    meter.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
  }

  async function go() {
    errorBox.hidden = true;
    if (!window.AudioEncoder || !window.MediaStreamTrackProcessor || !navigator.mediaDevices) {
      fail(T("live_unsupported"));
      return;
    }
    var stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, sampleRate: 48000, echoCancellation: true, noiseSuppression: true },
      });
    } catch (e) {
      fail(T("mic_denied"));
      return;
    }
    var response = await fetch("/api/v1/live/sessions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ targets: targets(), title: document.getElementById("live-title").value }),
      credentials: "same-origin",
    });
    var body = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      stream.getTracks().forEach(function (t) { t.stop(); });
      fail(T("live_refused", { why: body.detail || response.status }));
      return;
    }
    var scheme = location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + location.host + "/api/v1/live/sessions/" + body.id +
      "/ws?token=" + encodeURIComponent(body.token));
    socket.binaryType = "arraybuffer";
    var track = stream.getAudioTracks()[0];
    var reader = new MediaStreamTrackProcessor({ track: track }).readable.getReader();
    var encoder = new AudioEncoder({
      output: function (chunk) {
        if (socket.readyState !== WebSocket.OPEN) return;
        var samples = Math.round(chunk.duration * 48 / 1000) || 2880;
        var packet = new Uint8Array(10 + chunk.byteLength);
        var view = new DataView(packet.buffer);
        view.setBigUint64(0, BigInt(Date.now() - Math.round(samples / 48)));
        view.setUint16(8, samples);
        chunk.copyTo(packet.subarray(10));
        socket.send(packet);
        running.frames += 1;
      },
      error: function (e) { fail(T("live_failed", { why: e.message })); },
    });
    running = { socket: socket, track: track, encoder: encoder, reader: reader, frames: 0, id: body.id };
    window.loaxaLive = running;  // for the browser test: what has been sent
    goButton.hidden = true;
    stopButton.hidden = false;
    say(T("live_warming", { n: Math.round(body.warmup_ms / 100) / 10 }));
    setTimeout(function () { if (running) say(T("live_on_air", { n: body.station_ids.length })); },
      body.warmup_ms);
    socket.onclose = function () { if (running && running.socket === socket) stop("closed"); };
    socket.onopen = async function () {
      var configured = false;
      while (running && running.socket === socket) {
        var next = await reader.read();
        if (next.done) break;
        var data = next.value;
        if (!configured) {
          encoder.configure({
            codec: "opus", sampleRate: data.sampleRate, numberOfChannels: data.numberOfChannels,
            bitrate: 16000, opus: { frameDuration: 60000, application: "voip" },
          });
          configured = true;
        }
        level(data);
        encoder.encode(data);
        data.close();
      }
    };
  }

  function stop(why) {
    var live = running;
    running = null;
    goButton.hidden = false;
    stopButton.hidden = true;
    meter.value = 0;
    if (!live) return;
    try { if (live.socket.readyState === WebSocket.OPEN) live.socket.send("stop"); } catch (e) {}
    try { live.socket.close(); } catch (e) {}
    try { live.track.stop(); } catch (e) {}
    try { live.encoder.close(); } catch (e) {}
    if (why !== "failed") say(T("live_stopped"));
  }

  goButton.addEventListener("click", function () { go().catch(function (e) { fail(String(e)); }); });
  stopButton.addEventListener("click", function () { stop("stopped"); });
})();
