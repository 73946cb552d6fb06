"""``kubectl ferry``: the entry point, and the one place errors become exit codes.

kubectl runs any ``kubectl-ferry`` on PATH for ``kubectl ferry ...``, passing
the arguments after ``ferry``. The exit codes are :mod:`.errors`'s: 0 success,
1 a result that is not (a failed, refused or cancelled migration), 2 usage,
3 the API, 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ferry_api import InvalidResourceError

from ferry_kubectl import output
from ferry_kubectl.errors import EXIT_API, EXIT_INTERRUPTED, EXIT_OK, PluginError
from ferry_kubectl.output import Format
from ferry_kubectl.parser import build_parser, normalize
from ferry_kubectl.session import Env

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(normalize(sys.argv[1:] if argv is None else argv))
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    out = output.make(fmt=Format(args.output), no_color=args.no_color)
    try:
        code: int = args.run(Env(args, out))
    except PluginError as error:
        output.error(str(error))
        return error.exit_code
    except InvalidResourceError as error:  # a body from the API server that fits no model
        output.error(str(error))
        return EXIT_API
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # A reader that stopped early (| head): not an error; keep Python quiet at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code
