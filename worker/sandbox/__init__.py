"""A local server that behaves like the Flextell API, with faults on demand.

The demo's target and the test bed of the worker: ``build_app`` gives the
aiohttp application, ``running_sandbox`` starts it in-process, and the
``flextell-worker sandbox`` command runs it standalone.
"""

from worker.sandbox.options import FAULT_KINDS, SandboxOptions, parse_faults
from worker.sandbox.server import RunningSandbox, build_app, running_sandbox, serve

__all__ = [
    "FAULT_KINDS",
    "RunningSandbox",
    "SandboxOptions",
    "build_app",
    "parse_faults",
    "running_sandbox",
    "serve",
]
