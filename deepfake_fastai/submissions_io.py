"""The Kaggle side of submissions: credentials, the API client, the upload and the public scores.

``import kaggle`` authenticates at import time and prints banners, so the client is imported only here, only
after ``credential_source`` has found credentials (a missing key costs milliseconds, not a client start-up),
with its output captured. No key or token is ever printed or logged: everything the client says, and every
error message, passes through ``scrub`` first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .netcheck import reachable


class SubmitError(RuntimeError):
    """An upload failed or cannot start (credentials, network, Kaggle's reply); the message says the fix."""


log = logging.getLogger(__name__)

AUTH_HELP = (
    "no Kaggle credentials found. Provide one of: ~/.kaggle/kaggle.json containing {\"username\": ..., "
    "\"key\": ...} (chmod 600; KAGGLE_CONFIG_DIR may point at another folder holding it); the environment "
    "variables KAGGLE_USERNAME and KAGGLE_KEY; or an API token in KAGGLE_API_TOKEN (or the file "
    "~/.kaggle/access_token). Create a key or token at https://www.kaggle.com/settings/api"
)
STATUS_HELP = {
    400: "Kaggle rejected the request (400 Bad Request)",
    401: "Kaggle rejected the credentials (401 Unauthorized): check that your key or token is current; "
         "regenerate it at https://www.kaggle.com/settings/api",
    403: "Kaggle refused (403 Forbidden): accept the rules of '{competition}' with this account at "
         "https://www.kaggle.com/competitions/{competition}/rules, and check the competition still takes "
         "submissions",
    404: "competition '{competition}' not found (404): check the slug in the competition's URL",
    429: "too many requests, or the daily submission limit is reached (429 Too Many Requests): wait, then retry",
}
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0  # a Kaggle call that has not answered by then has failed (the client itself sets no timeout)


def _config_dir() -> Path:
    """The folder kaggle 2.2.x reads kaggle.json from (KAGGLE_CONFIG_DIR, ~/.kaggle, or the XDG folder)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if legacy.exists():
        return legacy
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def _kaggle_json() -> dict[str, Any]:
    try:
        data = json.loads((_config_dir() / "kaggle.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def credential_source() -> str | None:
    """Where the kaggle client would find credentials (a description, never the secret), or None."""
    env, kaggle_dir = os.environ, Path.home() / ".kaggle"
    if env.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        if (kaggle_dir / name).is_file() and (kaggle_dir / name).read_text().strip():
            return f"~/.kaggle/{name}"
    file = _kaggle_json()
    username, key = env.get("KAGGLE_USERNAME") or file.get("username"), env.get("KAGGLE_KEY") or file.get("key")
    if username and key:
        in_env = env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")
        return "KAGGLE_USERNAME/KAGGLE_KEY" if in_env else str(_config_dir() / "kaggle.json")
    if (kaggle_dir / "credentials.json").is_file():
        return "~/.kaggle/credentials.json (kaggle auth login)"
    return None


def _secrets(api: Any = None) -> list[str]:
    """Every secret value in play (to blank out of any text we show)."""
    values = [os.environ.get("KAGGLE_KEY"), os.environ.get("KAGGLE_API_TOKEN"), _kaggle_json().get("key")]
    if api is not None:
        values += [api.config_values.get("key"), api.config_values.get("token")]
    return [str(v) for v in values if v and len(str(v)) >= 4]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every secret replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


@functools.cache
def _api_class() -> type:
    """KaggleApi, made to honour KAGGLE_API_ENVIRONMENT for its HTTP calls (imported on first use)."""
    with contextlib.redirect_stdout(io.StringIO()):  # `import kaggle` authenticates and prints help/banners
        from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient
    from kagglesdk.kaggle_env import get_env

    class EnvAwareKaggleApi(KaggleApi):
        """KaggleApi whose client goes where KAGGLE_API_ENVIRONMENT says (PROD when unset, as before)."""

        def build_kaggle_client(self) -> KaggleClient:
            # kaggle 2.2.4 maps only LOCALHOST (via --local) and otherwise pins PROD, although kagglesdk knows
            # every environment (TEST = http://localhost:7777, used by the tests). Never verbose: the verbose
            # client prints request headers, the Authorization header included.
            return KaggleClient(env=get_env(), verbose=False, username=self.config_values.get(self.CONFIG_NAME_USER),
                                password=self.config_values.get(self.CONFIG_NAME_KEY),
                                api_token=self.config_values.get(self.CONFIG_NAME_TOKEN),
                                response_processor=self.get_response_processor())

    return EnvAwareKaggleApi


def endpoint() -> str:
    """The Kaggle API endpoint this process would call (KAGGLE_API_ENVIRONMENT, default production)."""
    from kagglesdk.kaggle_env import get_endpoint, get_env

    try:
        return get_endpoint(get_env())
    except Exception as e:  # kagglesdk raises a bare Exception for an unknown KAGGLE_API_ENVIRONMENT
        raise SubmitError(f"KAGGLE_API_ENVIRONMENT: {e}; unset it to use kaggle.com") from None


def _check_reachable(url: str) -> None:
    """Fail in seconds, with the reason, when the API host does not answer."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if not reachable(parsed.hostname, port, CONNECT_TIMEOUT_S):
        raise SubmitError(f"cannot reach the Kaggle API at {url}; check the network and retry")


@contextlib.contextmanager
def _timeouts():
    """Give every HTTP call the kaggle client makes (connect, read) timeouts while inside this block.

    Why: kagglesdk and the upload step call requests without a timeout, so a server that accepts the connection
    and never answers would hang a submission forever.
    """
    from requests.adapters import HTTPAdapter

    original = HTTPAdapter.send

    def send(self, request, stream=False, timeout=None, **kwargs):
        return original(self, request, stream=stream, timeout=timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kwargs)

    HTTPAdapter.send = send
    try:
        yield
    finally:
        HTTPAdapter.send = original


def _network_error(e: Exception, secrets: list[str]) -> SubmitError:
    """A timeout or connection failure, in one line."""
    import requests

    if isinstance(e, requests.Timeout):
        return SubmitError(f"the Kaggle API did not answer within {READ_TIMEOUT_S:.0f} s: retry later")
    return SubmitError(f"cannot talk to the Kaggle API: {scrub(str(e), secrets)}")


def connect() -> Any:
    """An authenticated Kaggle API client; SubmitError (with how to fix it) when that cannot be had."""
    import requests

    if credential_source() is None:
        raise SubmitError(AUTH_HELP)  # before importing the client: no credentials must cost milliseconds
    _check_reachable(endpoint())
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), _timeouts():
            api = _api_class()()
            api.authenticate()  # calls exit(1) after printing help when it finds nothing usable
    except SystemExit:
        raise SubmitError(AUTH_HELP) from None
    except requests.HTTPError as e:  # a token is checked with the server
        raise _http_error(e, "", _secrets()) from None
    except requests.RequestException as e:
        raise _network_error(e, _secrets()) from None
    finally:
        log.debug("kaggle client: %s", scrub(out.getvalue(), _secrets()))
    return api


def _http_error(e: Exception, competition: str, secrets: list[str]) -> SubmitError:
    """A clear message for an HTTP error from the Kaggle API, with what the server said."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in STATUS_HELP and (competition or status not in (403, 404)):
        text = STATUS_HELP[status].format(competition=competition)
    elif status and status >= 500:
        text = f"Kaggle server error ({status}): retry later"
    else:
        text = f"Kaggle API call failed ({status or type(e).__name__})"
    return SubmitError(f"{text}. Server said: {scrub(str(e), secrets)}")


def _check_reply(reply: Any, failed_message: str, printed: str) -> dict[str, Any]:
    """Kaggle's reply as a dict, or SubmitError: a failed upload comes back as a message, not an exception."""
    message, ref = str(reply.message or ""), int(reply.ref or 0)
    if message == failed_message or (not ref and "success" not in message.lower()):
        hint = "; the file upload step failed, nothing was submitted: retry later" if message == failed_message else ""
        detail = f" (client output: {printed.strip()})" if printed.strip() else ""
        raise SubmitError(f"Kaggle did not accept the submission: {message or 'empty reply'}{hint}{detail}")
    return {"message": message, "ref": ref}


def upload(data: bytes, file_name: str, competition: str, message: str) -> dict[str, Any]:
    """Submit exactly ``data`` as ``file_name`` with ``message``; Kaggle's reply ({message, ref})."""
    import requests

    api = connect()
    secrets = _secrets(api)
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name  # the validated bytes, under the name Kaggle will show
        path.write_bytes(data)
        try:
            with contextlib.redirect_stdout(out), _timeouts():
                reply = api.competition_submit(str(path), message, competition, quiet=True)
        except requests.HTTPError as e:
            raise _http_error(e, competition, secrets) from None
        except requests.RequestException as e:
            raise _network_error(e, secrets) from None
    result = _check_reply(reply, api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE, scrub(out.getvalue(), secrets))
    log.info("submitted %s to %s: %s", file_name, competition, result["message"])
    return result


def public_scores(competition: str) -> dict[int, dict[str, Any]]:
    """Kaggle's view of past submissions by ref (public score, status); {} when the API is out of reach."""
    import requests

    if credential_source() is None:
        log.info("public scores unavailable: no Kaggle credentials")
        return {}
    try:
        api = connect()
        with contextlib.redirect_stdout(io.StringIO()), _timeouts():
            submissions = api.competition_submissions(competition) or []
    except (SubmitError, requests.RequestException) as e:
        log.warning("public scores unavailable: %s", scrub(str(e), _secrets()))
        return {}
    return {int(s.ref): {"public_score": s.public_score, "status": getattr(s.status, "name", str(s.status)),
                         "description": s.description} for s in submissions if s is not None}
