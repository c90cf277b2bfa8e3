"""The optional compiled kernel (segpipe.evaluators._kernel); everything else is declared in pyproject.toml.

A setup.py because pyproject's `[tool.setuptools] ext-modules` needs setuptools >= 74.1 (still marked
experimental there: https://setuptools.pypa.io/en/latest/userguide/ext_modules.html) and the build requires
only setuptools >= 68. `optional=True`: without a compiler the build of the extension fails with a warning, the
install still succeeds and segpipe uses its numpy path (segpipe/evaluators/kernel.py).
"""

import sys

from setuptools import Extension, setup

# No fused multiply-adds: bbIou's `da + ga - w * h` must round as pycocotools' plain C does (GCC contracts by
# default where the target has FMA, e.g. aarch64: https://gcc.gnu.org/onlinedocs/gcc/Optimize-Options.html#index-ffp-contract).
FLAGS = [] if sys.platform == "win32" else ["-ffp-contract=off"]

setup(ext_modules=[Extension("segpipe.evaluators._kernel", sources=["evaluators/_kernel.c"], extra_compile_args=FLAGS, optional=True),
                   Extension("segpipe.core._labelmap", sources=["pipeline/core/_labelmap.c"], optional=True)])
