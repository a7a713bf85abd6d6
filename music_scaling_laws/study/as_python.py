"""
Run a script inside this process as `python SCRIPT ARGS` would run it: what the fork server's children and the
GPU workers share, so that a run started either way is the run a fresh python makes.
"""
import os
import runpy
import signal
import sys
import traceback


def run_as_python(request):
    """Run request["script"] with request["args"] as __main__, in request["env"] (the whole environment) and
    request["cwd"], and return the exit status the interpreter would give: 0 at the end, sys.exit's number, 1 with
    its message printed for sys.exit("text") (a script's one-line error), 128 + SIGINT after Ctrl-C, 1 with the
    traceback printed for any other exception."""
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(request["script"]))
    try:
        runpy.run_path(request["script"], run_name="__main__")
        return 0
    except SystemExit as e:  # the interpreter's own rule for the exception that ends a program
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 -- reported as a fresh python reports an uncaught exception
        traceback.print_exc()
        return 1
