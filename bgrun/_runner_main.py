"""Entry script of a detached runner, started by path by bgrun.launcher.

It forks before importing anything of bgrun, so the process that started it can reap
its first half at once (no zombie in a long-lived caller, little waiting).
"""

import os
import sys

if __name__ == "__main__":
    if "--daemonize" in sys.argv:
        sys.argv.remove("--daemonize")
        if sys.platform != "win32" and os.fork() != 0:
            os._exit(0)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from bgrun.runnerproc import main

    main()
