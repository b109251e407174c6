"""The pages run under their Content-Security-Policy in a real Chromium, without a violation.

Headers checked by a test client prove the policy is sent; only a browser proves the
pages still work under it: every script loads from /static and runs (``loaxaT`` is the
message table every script uses), and nothing is blocked. A script injected the way an
attacker's markup would arrive is blocked, which shows the listener really hears
violations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loaxa.stack import LocalStack

LISTEN = """() => {
  window.__violations = [];
  document.addEventListener("securitypolicyviolation", (e) =>
    window.__violations.push(e.violatedDirective + " " + e.blockedURI));
}"""
PAGES = ("/", "/audio", "/fleet", "/alarms", "/alerts", "/alerts/new", "/programmes/new", "/users")


def test_pages_run_under_their_policy_with_no_violation(
    stack: LocalStack, page_for: Callable[..., Any]
) -> None:
    page = page_for(stack.admin_username, stack.admin_password)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.add_init_script(f"({LISTEN})()")
    for path in PAGES:
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.loaxaT") == "function", path  # /static ran
        assert page.evaluate("window.__violations") == [], path
    assert [text for text in console if "Content Security Policy" in text] == []

    # An injected inline script is blocked and reported: the listener is not deaf.
    page.evaluate(
        """() => { const s = document.createElement("script");
                   s.textContent = "window.__ran = true"; document.body.append(s); }"""
    )
    page.wait_for_function("window.__violations.length > 0")
    assert page.evaluate("window.__ran") is None
    assert any("Content Security Policy" in text for text in console)
