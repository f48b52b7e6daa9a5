"""The logic behind the Streamlit dashboard, tested without Streamlit.

One module per page in ``app_pages/`` (``overview``, ``lab``, ``per_transformation``,
``comparison``, ``failures``, ``search``), the frame's configuration and data
sources (``frame``), what several pages share (``shared``), and ``widgets``: the
one module in ``malle`` that calls Streamlit.
"""
