"""Product: near-duplicate groups in a folder of images (``malle dedup``), found with any method."""
