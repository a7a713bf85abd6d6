"""
Run a script inside this process as `python SCRIPT ARGS` would run it: what the fork server's children and the
GPU workers share, so that a run started either way is the run a fresh python makes -- the request the study sends
(request), the modules imported once before any request (PRELOAD), the script's run and exit status
(run_as_python), and how the study signals a run (ScriptRun).
"""
import json
import os
import runpy
import signal
import sys
import traceback

# what every training imports (torch._dynamo at AdamW's first step), imported once by the server or worker; the
# script itself is read by runpy for each run
PRELOAD = ("torch", "torch._dynamo", "music_scaling_laws.training.loop_state", "music_scaling_laws.training.run_output",
           "music_scaling_laws.training.schedule", "music_scaling_laws.training.step")
MAX_MESSAGE = 1 << 20  # bytes of one request (the environment is most of it)


def request(args, env):
    """The message that asks for `python args[0] args[1:]` with env (the whole environment) in this process's
    working directory (one JSON packet; the run's output pipe travels beside it)."""
    return json.dumps({"script": args[0], "args": [str(a) for a in args[1:]], "env": env,
                       "cwd": os.getcwd()}).encode()


class ScriptRun:
    """The study's handle on a script run this way, as script_runs uses a subprocess.Popen (pid, stdout, wait(),
    poll(), returncode, send_signal()); subclasses say how to wait."""
    pid = returncode = None

    def send_signal(self, sig):
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # it has just ended
                pass


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
