"""`stock-platform services up|down|status`: the local services for a run without Docker.

Fixed loopback ports by default (Kafka 9092, S3 7070) so the printed settings stay the same between
runs; state files under ``<STOCK_PLATFORM_HOME>/services`` let `down` and `status` find the processes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stock_platform.services.fakesnow import FakesnowServer
from stock_platform.services.kafka import KafkaBroker
from stock_platform.services.paths import platform_home
from stock_platform.services.process import (
    MissingPrerequisite,
    ServiceFailed,
    ServiceState,
    pid_alive,
    stop_process,
)
from stock_platform.settings import SettingsError

DEFAULT_SERVICES = ("kafka", "s3")
ALL_SERVICES = ("kafka", "s3", "fakesnow")
SECRET_SETTINGS = {"S3_SECRET_KEY"}


def _state_dir(home: Path) -> Path:
    return home / "services"


def kafka_controller_port(args: argparse.Namespace) -> int:
    """The local broker's controller listens on the port after its own."""
    return args.kafka_port + 1


def _build(name: str, home: Path, args: argparse.Namespace):
    data = home / "services" / name
    if name == "kafka":
        return KafkaBroker(data, port=args.kafka_port, controller_port=kafka_controller_port(args))
    if name == "s3":
        from stock_platform.services.s3 import S3Server

        previous = ServiceState.load(_state_dir(home), "s3")
        server = S3Server(data, port=args.s3_port)
        if previous is not None:
            # Keep the keys a stopped server was started with, so the printed settings stay valid.
            server.access_key = previous.settings["S3_ACCESS_KEY"]
            server.secret_key = previous.settings["S3_SECRET_KEY"]
        return server
    if name == "fakesnow":
        return FakesnowServer(data, port=args.fakesnow_port)
    raise ValueError(name)


def port_clash(names: list[str], args: argparse.Namespace) -> str | None:
    """Two of the services to start given the same port (the Kafka controller's is --kafka-port + 1), as
    an error message; None when every port is its own."""
    ports = {
        "kafka": [("--kafka-port", args.kafka_port), ("the Kafka controller's port (--kafka-port + 1)", kafka_controller_port(args))],
        "s3": [("--s3-port", args.s3_port)],
        "fakesnow": [("--fakesnow-port", args.fakesnow_port)],
    }  # fmt: skip
    taken: dict[int, str] = {}
    for name in names:
        for what, port in ports[name]:
            if port in taken:
                return f"{what} and {taken[port]} are both {port}: give the services different ports"
            taken[port] = what
    return None


def running(home: Path, name: str) -> ServiceState | None:
    state = ServiceState.load(_state_dir(home), name)
    return state if state is not None and pid_alive(state.pid) else None


def up(names: list[str], args: argparse.Namespace, home: Path) -> dict[str, dict[str, str]]:
    settings: dict[str, dict[str, str]] = {}
    for name in names:
        state = running(home, name)
        if state is None:
            started = time.monotonic()
            service = _build(name, home, args).start()
            state = service.state()
            state.save(_state_dir(home))
            print(f"started {name} (pid {state.pid}) in {time.monotonic() - started:.1f} s; log: {state.log}")
        else:
            print(f"{name} already running (pid {state.pid})")
        settings[name] = state.settings
    return settings


def down(names: list[str], home: Path) -> None:
    for name in names:
        state = ServiceState.load(_state_dir(home), name)
        if state is None:
            print(f"{name}: not started")
            continue
        stop_process(state.pid)
        ServiceState.remove(_state_dir(home), name)
        print(f"{name}: stopped")


def status(home: Path) -> int:
    any_running = False
    for name in ALL_SERVICES:
        state = ServiceState.load(_state_dir(home), name)
        if state is None:
            print(f"{name:9} not started")
        elif pid_alive(state.pid):
            any_running = True
            public = {k: v for k, v in state.settings.items() if k not in SECRET_SETTINGS}
            where = " ".join(f"{k}={v}" for k, v in public.items())
            print(f"{name:9} running  pid {state.pid}  {where}  log {state.log}")
        else:
            print(
                f"{name:9} dead     (pid {state.pid} gone; see {state.log}; `services down {name}` clears it)"
            )
    return 0 if any_running else 3


def print_settings(settings: dict[str, dict[str, str]]) -> None:
    print("\n# connection settings (eval or paste into .env):")
    for values in settings.values():
        for key, value in values.items():
            print(f"export {key}={value}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("names", nargs="*", metavar="SERVICE",
                        help=f"any of {', '.join(ALL_SERVICES)} (default for up: {' '.join(DEFAULT_SERVICES)})")  # fmt: skip
    parser.add_argument("--kafka-port", type=int, default=9092, help="Kafka listener (controller uses +1)")
    parser.add_argument("--s3-port", type=int, default=7070)
    parser.add_argument("--fakesnow-port", type=int, default=8085)


def run(args: argparse.Namespace) -> int:
    try:
        home = platform_home()
    except SettingsError as exc:
        print(f"error: {exc}")
        return 2
    if args.action == "status":
        return status(home)
    unknown = sorted(set(args.names) - set(ALL_SERVICES))
    if unknown:
        print(f"error: unknown service(s) {', '.join(unknown)}; choose from {', '.join(ALL_SERVICES)}")
        return 2
    names = args.names or (list(ALL_SERVICES) if args.action == "down" else list(DEFAULT_SERVICES))
    if args.action == "down":
        down(names, home)
        return 0
    clash = port_clash(names, args)
    if clash is not None:
        print(f"error: {clash}")
        return 2
    try:
        print_settings(up(names, args, home))
    except (MissingPrerequisite, ServiceFailed) as exc:
        print(f"error: {exc}")
        return 1
    return 0
