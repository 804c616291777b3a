"""Build script for the optional C extensions (everything else is in pyproject.toml).

``dehub.engine._topk_kernel`` is the compiled running top-k of the exact engine,
``dehub.engine._cluster_kernel`` the cluster sums of k-means. Both are ``optional``: where
no C compiler is found the build goes on without them and dehub does the same work with
numpy, with the same results (``dehub.engine.topk.kernel_isa()`` says which selection runs).
No ``-march`` flag: the instruction set (AVX-512, AVX2, plain C) is chosen at run time, so
one build runs on every x86-64 CPU (and the plain C path elsewhere).
"""

from setuptools import Extension, setup

KERNELS = ["_topk_kernel", "_cluster_kernel"]

setup(
    ext_modules=[
        Extension(
            f"dehub.engine.{name}",
            [f"src/dehub/engine/{name}.c"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=True,
        )
        for name in KERNELS
    ]
)
