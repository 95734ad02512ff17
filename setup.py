"""Build of the native XML → JSON core (everything else is in pyproject.toml).

The extension is optional: where it cannot be compiled (no compiler, no ``expat.h``)
the install still succeeds and xmlflow runs the pure-Python converter, saying so in
one warning line. ``XMLFLOW_NATIVE_WERROR=1`` (set by ``make`` under CI) turns C
warnings into errors; ``XMLFLOW_NATIVE_ASAN=1`` builds with AddressSanitizer (``make
test-native-asan``).
"""

import os

from setuptools import Extension, setup

CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
LDFLAGS: list[str] = []
if os.environ.get("XMLFLOW_NATIVE_WERROR") == "1":
    CFLAGS.append("-Werror")
if os.environ.get("XMLFLOW_NATIVE_ASAN") == "1":
    CFLAGS += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
    LDFLAGS += ["-fsanitize=address,undefined"]

setup(
    ext_modules=[
        Extension(
            "xmlflow.xml._native",
            sources=["src/xmlflow/xml/_native.c"],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
            optional=os.environ.get("XMLFLOW_NATIVE_REQUIRED") != "1",
        )
    ]
)
