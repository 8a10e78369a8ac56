"""filegate benchmarks: `python -m bench` (see bench/__main__.py).

Everything runs on loopback, each server in its own process so that memory can be
measured per process:

* bench.sandbox_server -- the standalone provider sandbox (`create_standalone_app()`);
* bench.server         -- the gateway (`create_app(Settings(...))` plus `GET /bench/bare`);
* bench.__main__       -- the command line; bench.runner starts both and runs the phases
  (bench.phases.*) with bench.processes, bench.measure, bench.payloads and bench.rawhttp,
  and bench.report prints the table.
"""
