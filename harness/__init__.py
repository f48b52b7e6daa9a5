"""Harnesses for Malle's own tests and benchmarks, shared by ``tests/`` and ``bench/``.

Not part of the installed package: they drive a checkout (its ``streamlit_app.py``, Debian's
``/usr/bin/chromium``), so they live beside ``malle/`` rather than inside it.
"""
