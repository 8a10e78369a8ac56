"""The standalone provider sandbox in its own process (what `filegate sandbox` serves).

python -m bench.sandbox_server --port P
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    import uvicorn

    from app.sandbox import create_standalone_app

    # Same server settings as `filegate sandbox` (app/cli.py: sandbox_cmd).
    uvicorn.run(create_standalone_app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
