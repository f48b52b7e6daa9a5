"""Core: how well a method finds copies, from its rankings.

- ``recall``: class- and instance-level Recall@K, as the reference experiment defines them;
- ``micro_ap``: open-set micro average precision and recall at a precision, as ISC2021 defines them;
- ``leave_one_out``: which op in a chain caused a miss.
"""
