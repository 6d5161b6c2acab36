from mlbuild.cli import entrypoint

entrypoint()
