"""filegate benchmarks: `python -m bench` (see bench/__main__.py).

Everything runs on loopback, each server in its own process so that memory can be
measured per process:

* bench.sandbox_server -- the standalone provider sandbox (`create_standalone_app()`);
* bench.server         -- the gateway (`create_app(Settings(...))` plus `GET /bench/bare`);
* bench.__main__       -- the driver that starts both, measures and prints the table.
"""
