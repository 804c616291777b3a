"""Build script for the one optional C extension (everything else is in pyproject.toml).

``dehub.engine._topk_kernel`` is the compiled running top-k of the exact engine. It is
``optional``: where no C compiler is found the build goes on without it and dehub selects
with numpy, with the same results (``dehub.engine.topk.kernel_isa()`` says which is used).
No ``-march`` flag: the instruction set (AVX-512, AVX2, plain C) is chosen at run time, so
one build runs on every x86-64 CPU (and the plain C path elsewhere).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "dehub.engine._topk_kernel",
            ["src/dehub/engine/_topk_kernel.c"],
            extra_compile_args=["-O3", "-std=c11"],
            optional=True,
        )
    ]
)
