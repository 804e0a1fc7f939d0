"""Human task names and task ids.

A task id is a uuid4 in 32 lowercase hex digits. nbgroups writes tasks to the
store in *pages* (one signed entry per submission batch, not one per task), so
the ids of one page share their first 24 digits (the page prefix: random, with
the uuid4 version and variant bits) and number the tasks in the last 8. One
index entry per page then finds any task by id.

A task name is four words from a fixed list of 256, derived from the id: the
first two words come from the page prefix, the last two from the task's index
spread by a bijection and salted by the prefix, so the tasks of one page have
distinct (and not look-alike) names, and a name leads back to its page through
a per-page index entry.
"""

from __future__ import annotations

import os

WORDS: tuple[str, ...] = (
    "acorn", "actor", "agent", "alarm", "album", "alpha", "amber", "angle", "ankle", "apple",
    "april", "arena", "armor", "arrow", "aspen", "atlas", "attic", "autumn", "badge", "baker",
    "bamboo", "banjo", "barley", "basil", "basin", "beach", "beacon", "beard", "bench", "berry",
    "bison", "blade", "blanket", "blossom", "border", "bottle", "branch", "bread", "breeze",
    "brick", "bridge", "bronze", "brook", "brush", "bubble", "bucket", "bugle", "bundle",
    "butter", "cabin", "cable", "cactus", "camera", "canal", "candle", "canvas", "canyon",
    "carbon", "cargo", "carpet", "castle", "cedar", "ceiling", "cellar", "cement", "chalk",
    "chapel", "cherry", "chess", "chorus", "cider", "circle", "citrus", "clay", "cliff", "clock",
    "cloud", "clover", "coast", "cobalt", "cocoa", "comet", "copper", "coral", "cotton", "crane",
    "crater", "crayon", "cricket", "crystal", "cupboard", "curtain", "daisy", "dancer", "delta",
    "denim", "desert", "diamond", "dolphin", "donkey", "dragon", "drum", "eagle", "easel",
    "echo", "ember", "engine", "falcon", "feather", "fennel", "ferry", "fiddle", "field",
    "finch", "flame", "flannel", "flint", "forest", "fossil", "fountain", "fox", "galaxy",
    "garden", "garlic", "gazelle", "geyser", "ginger", "glacier", "globe", "grape", "gravel",
    "guitar", "hammer", "harbor", "harvest", "hazel", "helmet", "heron", "hickory", "honey",
    "horizon", "hunter", "island", "ivory", "jacket", "jade", "jasmine", "jelly", "jungle",
    "kettle", "kitten", "ladder", "lagoon", "lantern", "laurel", "lemon", "lentil", "linen",
    "lizard", "lobster", "locket", "lotus", "magnet", "mango", "maple", "marble", "meadow",
    "melon", "meteor", "mirror", "mitten", "monsoon", "mosaic", "muffin", "nectar", "needle",
    "nickel", "oasis", "ocean", "olive", "onion", "orbit", "orchid", "otter", "oyster", "paddle",
    "palace", "panda", "paper", "parrot", "pasta", "pebble", "pencil", "pepper", "piano",
    "pilot", "pine", "planet", "plaza", "pocket", "pollen", "pony", "poppy", "potato", "prairie",
    "pumpkin", "puzzle", "quartz", "quill", "rabbit", "radish", "rainbow", "raven", "ribbon",
    "river", "robin", "rocket", "saddle", "salmon", "satin", "scarf", "shadow", "shell",
    "silver", "sketch", "sparrow", "speaker", "spice", "spruce", "squash", "stable", "statue",
    "summit", "sunset", "swan", "teapot", "temple", "thistle", "thunder", "tiger", "timber",
    "tomato", "topaz", "tulip", "tunnel", "turtle", "velvet", "violet", "walnut", "willow",
    "window", "winter", "wizard", "yarrow", "zebra", "zephyr",
)
_INDEX = {w: i for i, w in enumerate(WORDS)}
assert len(_INDEX) == 256

PAGE_CAPACITY = 1 << 16
PREFIX_LEN = 24  # hex digits of a task id shared by its page
"""Tasks in one page: the last two name words encode 16 bits of the index."""


def new_prefix() -> str:
    """A fresh random page prefix: 24 hex digits with uuid4's version/variant bits."""
    raw = bytearray(os.urandom(12))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def task_id(prefix: str, index: int) -> str:
    """The id of task number ``index`` of the page ``prefix``."""
    return f"{prefix}{index:08x}"


def split_id(task_id: str) -> tuple[str, int]:
    """``(prefix, index)`` of an id made by :func:`task_id`."""
    return task_id[:PREFIX_LEN], int(task_id[PREFIX_LEN:], 16)


_MIX = 0x9E37  # odd, so multiplying by it is a bijection of 16-bit numbers
_UNMIX = pow(_MIX, -1, 1 << 16)


def _mixed(prefix: str, index: int) -> int:
    """The 16 bits of the last two words: the index spread by a bijection, so that
    neighbouring tasks of a page differ in both words, salted by the page."""
    salt = int(prefix[4:8], 16)
    return ((index * _MIX) + salt) & 0xFFFF


def name_of(task_id: str) -> str:
    """The human name of a task id, e.g. ``'winter-speaker-alpha-ceiling'``."""
    prefix, index = split_id(task_id)
    b = bytes.fromhex(prefix[:4])
    m = _mixed(prefix, index)
    return f"{WORDS[b[0]]}-{WORDS[b[1]]}-{WORDS[m >> 8]}-{WORDS[m & 0xFF]}"


def name_family(prefix: str) -> str:
    """The first two words shared by every task name of a page."""
    b = bytes.fromhex(prefix[:4])
    return f"{WORDS[b[0]]}-{WORDS[b[1]]}"


def parse_name(name: str) -> tuple[str, int, int] | None:
    """Split a derived name into ``(family, word2, word3)`` indexes, or None."""
    parts = name.split("-")
    if len(parts) != 4 or any(p not in _INDEX for p in parts):
        return None
    return f"{parts[0]}-{parts[1]}", _INDEX[parts[2]], _INDEX[parts[3]]


def index_in_page(prefix: str, word2: int, word3: int) -> int:
    """The task index within page ``prefix`` whose name ends in these words."""
    salt = int(prefix[4:8], 16)
    return ((((word2 << 8) | word3) - salt) * _UNMIX) & 0xFFFF


def looks_like_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)
