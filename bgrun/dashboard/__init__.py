"""The web dashboard (extra `bgrun[dashboard]`)."""
