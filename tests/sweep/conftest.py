"""The harness tests' session fixtures (coco128 annotations, 16 letterboxed samples), shared."""

from tests.harness.conftest import coco_ann, letterboxed16  # noqa: F401  (fixtures)
