"""Entry script of `bgrun check`'s look at every allow-listed target, in a child process.

Started by path with the jobs' interpreter, in the project folder, so it finds what a
job finds (the working directory first on `sys.path`), and whatever the targets' imports
do stays in this short-lived process, never in the command's. Reads `{target:
[methods]}` as JSON on stdin; writes `[[target, method or null, "Kind: message"], ...]`
as JSON on stdout.
"""

import json
import os
import sys


def main() -> None:
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[0] = os.getcwd()  # as a job has it: the project folder, not bgrun/
    if package_parent not in sys.path:
        sys.path.append(package_parent)  # bgrun itself, after the job's own folders
    from bgrun.errors import BgrunError, MethodNotFoundError
    from bgrun.resolve import find_callable

    targets = json.load(sys.stdin)
    answer = sys.stdout
    sys.stdout = sys.stderr  # what the imports print is not the answer
    problems = []
    for target, methods in targets.items():
        for method in methods:
            try:
                find_callable(target, method, os.getcwd())
            except MethodNotFoundError as exc:
                problems.append([target, method, f"{exc.kind}: {exc}"])
            except BgrunError as exc:  # the target itself: once, not once per method
                problems.append([target, None, f"{exc.kind}: {exc}"])
                break
            except BaseException as exc:  # reported: the job would meet it too
                problems.append([target, None, f"{type(exc).__name__}: {exc}"])
                break
    json.dump(problems, answer)


if __name__ == "__main__":
    main()
