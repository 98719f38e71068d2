"""Fact tags (事实标签) as pure transforms, one module per sub-profile.

Each transform takes the silver rows known on the snapshot date ``D`` (the job
in jobs/subprofiles.py does the reading), the date and the tag dictionary
(conf/tags.yaml, :class:`portrait.tags.dictionary.TagDictionary`), and
returns one row per user (per user and product line for ``product_line``)
with the columns of conf/tables/profile.yaml, which are the tags' own
(``tags_of:``). No I/O, no Python UDFs: one conditional aggregation per
input, so the whole user base is one pass.
"""
