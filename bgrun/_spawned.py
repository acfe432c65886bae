"""Entry script of a spawned job child: `python .../bgrun/_spawned.py`.

Kept to a few lines on purpose: a script given by path is compiled from source at every
start, while a module it imports is read from bytecode (so `_child` is a module).
The script's folder is first on `sys.path`, so `_child` is found alone, without
`bgrun/__init__` or anything else of bgrun; `_child.main()` then puts the job's working
directory first instead.
"""

import _child  # type: ignore[import-not-found]

_child.main()
