"""Who this client is on a tracking server, and what it may do there: asked before any training, so that a
server that does not answer, a missing or wrong password, or a user who may only read is one line (exit
status 2) rather than a traceback after the first epoch.

Credentials and TLS settings are MLflow's own (`get_default_host_creds`): MLFLOW_TRACKING_USERNAME /
MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials), MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_SERVER_CERT_PATH,
MLFLOW_TRACKING_INSECURE_TLS. A server without MLflow's basic-auth app answers as it always did.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ssgan.errors import SSGANError

USER_VAR, PASSWORD_VAR = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
HEALTH_TIMEOUT = 5.0
LOGIN_TIMEOUT = 30.0  # the server checks a password with PBKDF2: slow on a busy machine
# what a permission lets a user do (MLflow's basic-auth app: READ < USE < EDIT < MANAGE)
WRITES = ("EDIT", "MANAGE")


@dataclass(frozen=True)
class Identity:
    """The user a tracking server took this client for; `username` None: the server asks for no login."""
    uri: str
    username: Optional[str] = None
    is_admin: bool = False


def request(uri: str, endpoint: str, timeout: float, **kwargs):
    """One GET request to the server with MLflow's credentials and TLS settings, no retries; the response
    whatever its status (MlflowException when it cannot be had: ssgan.tracking.store.check_reachable says so)."""
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    return http_request(get_default_host_creds(uri), endpoint, "GET", max_retries=0,
                        timeout=timeout, raise_on_status=False, **kwargs)


def check_server(uri: str) -> Identity:
    """The server answers and takes this client's credentials; returns who it took the client for."""
    from mlflow.utils.credentials import read_mlflow_creds

    request(uri, "/health", HEALTH_TIMEOUT)
    answer = request(uri, "/api/2.0/mlflow/experiments/search", LOGIN_TIMEOUT, params={"max_results": 1})
    creds = read_mlflow_creds()
    if answer.status_code == 401:
        if not creds.username or not creds.password:
            missing = USER_VAR if not creds.username else PASSWORD_VAR
            raise SSGANError(f"MLflow tracking server {uri} asks for a login: set {missing} (and "
                             f"{PASSWORD_VAR if missing == USER_VAR else USER_VAR}) to your user on that server")
        raise SSGANError(f"MLflow tracking server {uri} refused user {creds.username!r}: check {PASSWORD_VAR} "
                         f"(and {USER_VAR})")
    if answer.status_code == 403:
        raise SSGANError(f"MLflow tracking server {uri} lets user {creds.username!r} read no experiment; ask its "
                         "admin for access (ssgan users grant)")
    if answer.status_code >= 400:
        raise SSGANError(f"MLflow tracking server {uri} answered {answer.status_code} to a search for experiments; "
                         "is it an MLflow tracking server?")
    who = request(uri, "/api/2.0/mlflow/users/current", LOGIN_TIMEOUT)
    if who.status_code != 200:  # no basic-auth app: anyone may do anything
        return Identity(uri)
    user = who.json()["user"]
    return Identity(uri, user["username"], bool(user.get("is_admin")))


def permission(identity: Identity, resource_type: str, resource_id: str) -> str:
    """The user's permission on an experiment (by id) or a registered model (by name): READ, USE, EDIT,
    MANAGE or NO_PERMISSIONS; MANAGE on a server without logins and for an admin."""
    if identity.username is None or identity.is_admin:
        return "MANAGE"
    answer = request(identity.uri, "/api/3.0/mlflow/users/permissions/get", LOGIN_TIMEOUT,
                     params={"username": identity.username, "resource_type": resource_type, "resource_id": resource_id})
    if answer.status_code != 200:  # an older auth app: the first write will tell
        return "MANAGE"
    return answer.json().get("permission", "MANAGE")


def check_can_write(identity: Identity, experiment_id: str, experiment: str) -> None:
    """One line, before training, when the user may not record runs in the experiment."""
    held = permission(identity, "experiment", experiment_id)
    if held not in WRITES:
        raise SSGANError(f"user {identity.username!r} may not record runs in experiment {experiment!r} on "
                         f"{identity.uri} (permission {held}); ask its admin to grant EDIT (ssgan users grant "
                         f"{identity.username} --experiment {experiment!r} --permission EDIT) or choose another "
                         "tracking.experiment")


def check_can_register(identity: Identity, model: str, exists: bool) -> None:
    """One line, before training, when the user may not add a version to registered model `model` (nor move
    its aliases). A model that does not exist yet is created, and its creator manages it."""
    if not exists:
        return
    held = permission(identity, "registered_model", model)
    if held not in WRITES:
        raise SSGANError(f"user {identity.username!r} may not register versions of model {model!r} on "
                         f"{identity.uri} (permission {held}); ask its admin to grant EDIT (ssgan users grant "
                         f"{identity.username} --model {model!r} --permission EDIT) or choose another --register name")


def add_user(uri: str, username: str, password: str) -> None:
    """Create a user on the server (this client must be its admin)."""
    auth_call(uri, lambda users: users.create_user(username, password), f"add user {username!r}")


def grant(uri: str, username: str, resource_type: str, resource_id: str, level: str) -> None:
    """Give `username` permission `level` on an experiment (by id) or a registered model (by name); replaces
    what the user held there."""
    auth_call(uri, lambda users: users.grant_user_permission(username, resource_type, resource_id, level),
              f"grant {level} to {username!r}")


def auth_call(uri: str, call, what: str) -> None:
    """Run `call` on the server's basic-auth client; its refusals as one line."""
    import warnings

    import mlflow

    from mlflow.server import get_app_client

    with warnings.catch_warnings():  # the server's modules, imported for the client, warn about the server's deps
        warnings.simplefilter("ignore")
        users = get_app_client("basic-auth", tracking_uri=uri)
    try:
        call(users)
    except mlflow.exceptions.MlflowException as e:
        code = e.error_code
        if code == "UNAUTHENTICATED":
            raise SSGANError(f"cannot {what} on {uri}: the server refused the login; set {USER_VAR}=admin and "
                             f"{PASSWORD_VAR} to the admin's password") from None
        if code == "PERMISSION_DENIED":
            raise SSGANError(f"cannot {what} on {uri}: only the server's admin may ({USER_VAR}=admin)") from None
        if code == "RESOURCE_ALREADY_EXISTS":
            raise SSGANError(f"cannot {what} on {uri}: that user exists already") from None
        if code in ("ENDPOINT_NOT_FOUND", "NOT_FOUND") or "failed with error code 404" in str(e):
            raise SSGANError(f"cannot {what} on {uri}: the server has no logins (start it with authentication: "
                             "ssgan server --auth)") from None
        raise SSGANError(f"cannot {what} on {uri}: {str(e.message).splitlines()[0]}") from None
