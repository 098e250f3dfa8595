"""The Label Studio labeling config, generated from a ``Skeleton``.

A person rectangle, one keypoint label per joint (explicit hotkeys, ``model_index`` = the joint's index),
a per-region "occluded" choice (absent = visible, v=2; missing joint = v=0), no image rotation, and the
per-task review control: the reasons the gate sent the task back (task data ``review``) and a reviewer's
decision, "plausible as drawn" (merge the labels as they are, the findings kept) or "needs fixing" (keep
it out until the decision changes). No ``maxUsages``: it counts per task and would block the second person.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..skeleton import SPINETRACK37, Skeleton

IMAGE = "image"
PERSON = "person"
KEYPOINTS = "kp"
VISIBILITY = "kp_vis"
OCCLUDED = "occluded"
REVIEW = "review"  # the decision control, and the task data field with the gate's reasons
CONFIRM = "plausible as drawn"
NEEDS_FIXING = "needs fixing"
REVIEW_CHOICES = (CONFIRM, NEEDS_FIXING)
CONFIG_PATH = Path(__file__).resolve().parents[2] / "annotation" / "labeling_config.xml"

_HOTKEYS = "1234567890qwertyuiopasdfghjklzxcvbnm"
_COLORS = {"body": "#e6194b", "feet": "#f58231", "spine": "#3cb44b", "experimental": "#911eb4"}


def hotkeys(n: int) -> list[str]:
    """Distinct hotkeys: single keys, then shift- and alt-combinations."""
    keys = list(_HOTKEYS) + [f"shift+{k}" for k in _HOTKEYS] + [f"alt+{k}" for k in _HOTKEYS]
    if n > len(keys):
        raise ValueError(f"{n} keypoints: not enough hotkeys")
    return keys[:n]


def labeling_config(skeleton: Skeleton = SPINETRACK37) -> str:
    """The XML config for ``skeleton``."""
    group_of = {}
    for g in ("experimental", "feet", "body", "spine"):  # later groups win (hip, neck: spine)
        for i in skeleton.groups.get(g, ()):
            group_of[i] = g
    labels = "\n".join(
        f'    <Label value={quoteattr(name)} model_index="{i}" hotkey={quoteattr(key)} '
        f'background="{_COLORS.get(group_of.get(i, ""), "#4363d8")}"/>'
        for i, (name, key) in enumerate(zip(skeleton.names, hotkeys(len(skeleton.names)))))
    review = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in REVIEW_CHOICES)
    return f"""<View>
  <Header value="One box per person; place its joints inside it (Regions panel: drag joints under their person)."/>
  <Image name="{IMAGE}" value="$image" zoom="true" zoomControl="true" rotateControl="false"/>
  <RectangleLabels name="{PERSON}" toName="{IMAGE}" strokeWidth="2">
    <Label value="person" background="#00a2ff"/>
  </RectangleLabels>
  <KeyPointLabels name="{KEYPOINTS}" toName="{IMAGE}" strokeWidth="1" snap="none">
{labels}
  </KeyPointLabels>
  <Choices name="{VISIBILITY}" toName="{IMAGE}" perRegion="true" visibleWhen="region-selected" choice="single-radio" showInline="true">
    <Choice value="{OCCLUDED}"/>
  </Choices>
  <Header value="Review (only for tasks sent back; the gate's reasons follow):" size="6"/>
  <Text name="{REVIEW}_reasons" value="${REVIEW}"/>
  <Choices name="{REVIEW}" toName="image" choice="single" showInline="true">
{review}
  </Choices>
</View>
"""
