"""The JSON Schema of the rendered profile (``portrait show`` / ``export``), derived from the tag dictionary.

    python -m portrait.master.schema > conf/schemas/profile.schema.json

The layout (which Chinese key holds which tag) is render.py's; every value
set comes from conf/tags.yaml (``values:`` through the labels render.py
shows them with) and the taste keys from conf/landing.yaml's salad
categories, so a value added to the dictionary reaches the schema, and a
value without a label fails here instead of rendering unchecked. The file is
generated, never edited by hand; a test fails when it is out of date.
"""

from __future__ import annotations

import json
import sys

from portrait.core.config import Conf, ConfError
from portrait.master.render import ACTIVITY, GENDER, LIFECYCLE, OCCUPATION, TASTE, VIP
from portrait.tags.dictionary import TagDictionary

COMMAND = "python -m portrait.master.schema > conf/schemas/profile.schema.json"
NULL = None


def _labels(tags: TagDictionary, tag: str, labels: dict[str, str], skip: tuple[str, ...] = ()) -> list[str]:
    """The label render.py shows for each value of ``tag``; a value without one is an error."""
    missing = [v for v in tags.values(tag) if v not in labels and v not in skip]
    if missing:
        raise ConfError(f"tag {tag}: value(s) {', '.join(missing)} of conf/tags.yaml have no label in lib/portrait/master/render.py")
    return [labels[v] for v in tags.values(tag) if v not in skip]


def _object(properties: dict, **extra) -> dict:
    return {"type": "object", "additionalProperties": False, "required": list(properties), "properties": properties, **extra}


def _ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


def build(tags: TagDictionary) -> dict:
    tastes = [TASTE[c] for c in tags.categories.get("salad", [])]
    occupations = list(OCCUPATION.values())
    lifecycle = _labels(tags, "lifecycle_stage", LIFECYCLE)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://portrait.example/schemas/profile.schema.json",
        "title": "用户画像 - the master profile of one user on one snapshot date",
        "description": (
            "What `portrait show` prints and `portrait export` writes one line of (lib/portrait/master/render.py render); "
            "shaped like the seed's final example. Every section is always present; a tag whose model could not run is null. "
            f"Generated from conf/tags.yaml by `{COMMAND}`; do not edit."
        ),
        **_object(
            {
                "ID": {"type": "string", "minLength": 1},
                "姓名": {"type": ["string", "null"]},
                "快照日期": _ref("isoDate"),
                "性别": _object(
                    {
                        "自填": {"enum": [*GENDER.values(), NULL]},
                        "推断": _object({"性别": {"enum": [*GENDER.values(), NULL]}, "男性概率": _ref("probability")}),
                    }
                ),
                "社会属性": _object(
                    {
                        "常用地址": {
                            "type": "object",
                            "propertyNames": {"pattern": "^常用地址[1-9][0-9]*$"},
                            "additionalProperties": _object(
                                {
                                    "地理名称": {"type": ["string", "null"]},
                                    "经纬度": {"type": ["string", "null"], "pattern": "^-?[0-9.]+,-?[0-9.]+$"},
                                    "类型": {"type": ["string", "null"]},
                                    "次数": {"type": "integer", "minimum": 1},
                                }
                            ),
                        },
                        "职业": _object(
                            {
                                "职业标签": {"enum": [*occupations, NULL]},
                                "概率": _ref("probability"),
                                **{f"{label}概率": _ref("probability") for label in occupations},
                            }
                        ),
                        "年龄段": {"enum": [band["band"] for band in tags.threshold("age_band", "bands")] + [NULL]},
                        "城市": {"type": ["string", "null"]},
                    }
                ),
                "消费": _object(
                    {
                        "消费标签": {"enum": _labels(tags, "vip_tier", VIP, skip=("regular",)) + lifecycle},
                        "生命周期": {"enum": lifecycle},
                        "30天内消费金额": {"type": "string", "pattern": "^[0-9]+元$"},
                        "30天内消费次数": _ref("count"),
                        "距上次消费天数": {"type": ["integer", "null"], "minimum": 0},
                        "RFM": _object(
                            {
                                "R": _ref("score"),
                                "F": _ref("score"),
                                "M": _ref("score"),
                                "分群": {"enum": [*tags.values("rfm_segment"), NULL]},
                            }
                        ),
                        "流失概率": _ref("probability"),
                        "存活概率": _ref("probability"),
                        "价格敏感": _ref("probability"),
                        "优惠敏感": _ref("probability"),
                        "首次消费时间": _ref("dottedDate"),
                        "最后消费时间": _ref("dottedDate"),
                    }
                ),
                "行为": _object(
                    {
                        "行为标签": {"enum": _labels(tags, "activity_tag", ACTIVITY)},
                        "30天内登场次数": _ref("count"),
                        "30天内评价次数": _ref("count"),
                        "30天内差评次数": _ref("count"),
                        "30天内退货次数": _ref("count"),
                        "口味偏好": _object({name: _ref("probability") for name in tastes}),
                        "兴趣": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
                    }
                ),
                "产品线": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": _object(
                        {
                            "强度": {"enum": tags.values("line_intensity")},
                            "状态": {"enum": tags.values("line_status")},
                            "30天使用次数": {"type": "integer", "minimum": 0},
                            "30天使用天数": {"type": "integer", "minimum": 0, "maximum": 30},
                            "使用占比": _ref("probability"),
                            "最后使用时间": _ref("dottedDate"),
                            "距上次使用天数": {"type": ["integer", "null"], "minimum": 0},
                        }
                    ),
                },
                "模型版本": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        ),
        "$defs": {
            "probability": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "count": {"type": "integer", "minimum": 0},
            "score": {"type": ["integer", "null"], "minimum": 1, "maximum": 5},
            "isoDate": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
            "dottedDate": {"type": ["string", "null"], "pattern": "^[0-9]{4}\\.[0-9]{2}\\.[0-9]{2}$"},
        },
    }


def render(tags: TagDictionary) -> str:
    return json.dumps(build(tags), ensure_ascii=False, indent=2) + "\n"


def main() -> int:
    sys.stdout.write(render(TagDictionary.load(Conf())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
