"""Entry script of a detached watcher, started by path by bgrun.watchlink.

Like a runner's, it forks before importing anything of bgrun, so the runner that
started it reaps its first half at once; the watcher itself never forks again.
"""

import os
import sys

if __name__ == "__main__":
    if "--daemonize" in sys.argv:
        sys.argv.remove("--daemonize")
        if sys.platform != "win32" and os.fork() != 0:
            os._exit(0)
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from bgrun.watcher import main

    main(sys.argv[1:])
