"""Fleet rollouts: the device polls the fleet's rollout server through hawkBit's device API (DDI)
and installs what it is given (image-build/update/README.md, "Fleets").

The server is Eclipse hawkBit, or goosebit for small fleets; the fleet file's [update] table
names it. The client is rauc-hawkbit (PyPI): it polls, registers the device with its attributes,
downloads the deployment's bundle, hands it to RAUC over D-Bus, and reports progress and the
result back. After a successful install the device reboots into the new slot on trial, where the
health check decides (appliance.update.confirm).

Two parts of rauc-hawkbit 0.2 (2020) are adapted here to the DDI API as servers other than
hawkBit itself implement it (goosebit checks requests against the API's schema):
- reading a deployment: it expects hawkBit's own link format (".../deploymentBase/<id>?c=<hash>")
  and an MD5 for every artifact; goosebit links without the query and gives SHA-1. This reads
  any of them and checks the strongest hash the server gives;
- progress in feedback: it sends {"percentage": n} (or {}), the API's form is {"cnt": n, "of": 100}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import socket
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance import storage, update

log = logging.getLogger(__name__)

BUNDLE_NAME = "hawkbit.raucb"  # the deployment's bundle, in the download folder (the data partition)
HASHES = ("sha256", "sha1", "md5")  # strongest first


@dataclass(frozen=True)
class Server:
    url: str  # http(s)://host[:port]
    tenant: str
    token: str | None

    @property
    def host(self) -> str:
        return urllib.parse.urlparse(self.url).netloc

    @property
    def ssl(self) -> bool:
        return urllib.parse.urlparse(self.url).scheme == "https"


def server_from_fleet(fleet_file: Path) -> Server | None:
    from appliance import fleet
    cfg = fleet.load(fleet_file).update
    if cfg.hawkbit_url is None:
        return None
    return Server(cfg.hawkbit_url.rstrip("/"), cfg.hawkbit_tenant, cfg.hawkbit_token)


def device_attributes() -> dict[str, str]:
    """What the server matches rollouts against: the board (RAUC's compatible, as bundles name
    it) and the running version."""
    status = json.loads(update._rauc("status", "--output-format=json"))
    state = update.slot_state()
    return {"hw_boardname": status["compatible"], "hw_revision": "default",
            "sw_version": state.versions.get(state.booted) or "0.0.0", "slot": state.booted}


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def deployment_action(href: str) -> tuple[str, dict[str, str]]:
    """(action id, query) from a deploymentBase link, with or without hawkBit's ?c= query."""
    parsed = urllib.parse.urlparse(href)
    action = parsed.path.rstrip("/").rsplit("/deploymentBase/", 1)[-1]
    return action, dict(urllib.parse.parse_qsl(parsed.query))


def ddi_feedback(data: dict) -> dict:
    """rauc-hawkbit's feedback body with its progress in the DDI API's form."""
    result = data.get("status", {}).get("result")
    if isinstance(result, dict) and "progress" in result:
        progress = result.pop("progress") or {}
        if "percentage" in progress:
            result["progress"] = {"cnt": int(progress["percentage"]), "of": 100}
    return data


def client_class():
    """rauc-hawkbit's client with the deployment reading above (imported late: the library and
    its GLib/aiohttp dependencies exist only on the device)."""
    import aiohttp
    from rauc_hawkbit.ddi.deployment_base import DeploymentStatusExecution, DeploymentStatusResult
    from rauc_hawkbit.rauc_dbus_ddi_client import RaucDBUSDDIClient

    class Client(RaucDBUSDDIClient):
        action_id: str | None  # the library's: the deployment being installed (None: idle)

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            post = self.ddi.post_resource

            async def post_ddi_progress(api_path: str, data: dict, **kw: Any) -> Any:
                return await post(api_path, ddi_feedback(data), **kw)
            self.ddi.post_resource = post_ddi_progress

        async def _fail(self, action: str, message: str) -> None:
            log.error("deployment %s: %s", action, message)
            await self.ddi.deploymentBase[action].feedback(
                DeploymentStatusExecution.closed, DeploymentStatusResult.failure, [message])

        async def process_deployment(self, base: dict[str, Any]) -> None:
            if self.action_id is not None:
                return  # an install is running
            action, query = deployment_action(base["_links"]["deploymentBase"]["href"])
            info = await self.ddi.get_resource(
                "/{tenant}/controller/v1/{controllerId}/deploymentBase/{actionId}", query, actionId=action)
            try:
                artifact = info["deployment"]["chunks"][0]["artifacts"][0]
                links = artifact["_links"]
                url = (links.get("download") or links["download-http"])["href"]
                algorithm = next(a for a in HASHES if a in artifact.get("hashes", {}))
            except (KeyError, IndexError, StopIteration):
                await self._fail(action, "the deployment names no downloadable artifact with a hash")
                return
            bundle = Path(self.bundle_dl_location)
            size = artifact.get("size")
            if isinstance(size, int) and (problem := update.room_problem(size, bundle.parent)) is not None:
                await self._fail(action, problem)
                return
            log.info("deployment %s: downloading %s", action, url)
            try:
                await self.ddi.get_binary(url, str(bundle))
            except aiohttp.ClientError:
                discard(bundle)
                raise  # the network's: the library polls again and the download starts over
            except OSError as exc:  # the device's: say so, and give the space back
                discard(bundle)
                await self._fail(action, f"the bundle could not be saved: {storage.plain_reason(exc)}")
                return
            got, want = file_hash(bundle, algorithm), artifact["hashes"][algorithm]
            if got != want.lower():
                discard(bundle)
                await self._fail(action, f"the download's {algorithm} is {got}, the server said {want}")
                return
            self.action_id = action
            log.info("deployment %s: installing", action)
            await asyncio.shield(self.install())

    return Client


def discard(bundle: Path) -> None:
    """Remove a download that will not be installed (a read-only disk has none to remove)."""
    with contextlib.suppress(OSError):
        bundle.unlink(missing_ok=True)


def unwritable(folder: Path) -> str | None:
    """Why bundles cannot be saved in `folder` (made if missing), or None when they can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return storage.plain_reason(exc)


def glib_event_loop() -> asyncio.AbstractEventLoop:
    """rauc-hawkbit follows RAUC's D-Bus signals through GLib: asyncio must run on GLib's loop, the
    one on the main context (asyncio.run would make a second loop, which PyGObject 3.50 refuses:
    "Thread 'MainThread' already has a main context")."""
    try:
        from gi.events import GLibEventLoopPolicy  # PyGObject >= 3.50 (Debian trixie)
        asyncio.set_event_loop_policy(GLibEventLoopPolicy())
    except ImportError:
        import gbulb  # older PyGObject
        gbulb.install()
    return asyncio.get_event_loop_policy().get_event_loop()


async def poll(server: Server, controller_id: str, reboot_command: tuple[str, ...], download_dir: Path) -> None:
    import aiohttp

    def installed(result: int) -> None:
        if result == 0:
            log.info("update installed; rebooting into it on trial")
            subprocess.run(list(update.reboot_into_trial(update.BOOT_DIR, reboot_command)), check=False)
        else:
            log.error("the rollout's bundle was not installed (RAUC result %d)", result)

    async with aiohttp.ClientSession() as session:
        client = client_class()(session, server.host, server.ssl, server.tenant, controller_id,
                                server.token or "", device_attributes(), str(download_dir / BUNDLE_NAME), installed)
        await client.start_polling()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="blurcam update hawkbit",
                                     description="poll the fleet's rollout server and install its updates")
    parser.add_argument("--fleet-file", type=Path, default=Path("/etc/blurcam/fleet.toml"))
    parser.add_argument("--check", action="store_true", help="only say whether a server is configured (exit 1: no)")
    parser.add_argument("--controller-id", default=None, help="this device's name on the server (default: hostname)")
    parser.add_argument("--download-dir", type=Path, default=update.DOWNLOAD_DIR,
                        help="where bundles are downloaded (default: the data partition's %(default)s)")
    parser.add_argument("--reboot-command", default=" ".join(update.REBOOT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    server = server_from_fleet(args.fleet_file)
    if server is None:
        print(f"{args.fleet_file}: no [update] hawkbit_url: not polling any rollout server")
        return 1 if args.check else 0
    if args.check:
        return 0
    if not update.slot_state().booted_good:
        print("this slot is on trial: the health check decides first; not polling yet", file=sys.stderr)
        return 1
    if (problem := unwritable(args.download_dir)) is not None:
        print(f"{args.download_dir}: no bundle can be saved there ({problem}); not polling", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    loop = glib_event_loop()
    controller_id = args.controller_id or socket.gethostname()
    log.info("polling %s (tenant %s) as %s", server.url, server.tenant, controller_id)
    loop.run_until_complete(poll(server, controller_id, tuple(args.reboot_command.split()), args.download_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
