import numpy as np
import pytest

from spinetrack_tools.skeleton import COCO17, HALPE26, SPINETRACK37, Skeleton, skeleton_for_names

# spinetrack-format.md §1.1
DOC_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 17, 18, 19, 21, 20, 23, 22, 25, 24,
            26, 27, 28, 29, 30, 32, 31, 34, 33, 35, 36]


def test_spinetrack_layout_matches_the_reference():
    sk = SPINETRACK37
    assert sk.num_keypoints == 37
    assert sk.names[17:20] == ("head", "neck", "hip")
    assert sk.names[26:31] == ("spine_01", "spine_02", "spine_03", "spine_04", "spine_05")
    assert sk.names[35:] == ("neck_02", "neck_03")
    assert sk.sigmas[[18, 19, 26, 29, 31, 33, 35, 36]].tolist() == [0.04, 0.07, 0.10, 0.08, 0.12, 0.07, 0.07, 0.06]
    assert sk.flip_index.tolist() == DOC_FLIP
    assert len(sk.links) == 39
    assert sk.groups["body"] == tuple(range(17))
    assert sk.groups["feet"] == tuple(range(20, 26))
    assert sk.groups["spine"] == (19, 26, 27, 28, 29, 30, 18, 35, 36)
    assert sk.groups["experimental"] == (31, 32, 33, 34)
    assert sk.groups["overall"] == tuple(range(37))
    assert sk.spine_chain == [19, 26, 27, 28, 29, 30, 18, 35, 36]


def test_subsets_are_derived():
    assert COCO17.names == SPINETRACK37.names[:17]
    assert HALPE26.names == SPINETRACK37.names[:26]
    assert np.array_equal(COCO17.sigmas, SPINETRACK37.sigmas[:17])
    assert COCO17.flip_pairs == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
    assert set(HALPE26.groups) == {"body", "feet", "spine", "overall"}
    assert HALPE26.groups["spine"] == (19, 18)  # the chain points Halpe has: sacrum and C7
    assert all(a < 17 and b < 17 for a, b in COCO17.links)
    # Halpe keeps the hip-neck links of the chain it has
    assert (11, 19) in HALPE26.links


def test_category_names_select_or_verify():
    assert skeleton_for_names(list(COCO17.names)) is COCO17
    assert skeleton_for_names(list(SPINETRACK37.names)) is SPINETRACK37
    assert skeleton_for_names(None) is SPINETRACK37
    with pytest.raises(ValueError, match="keypoint 3 is named 'right_ear'"):
        names = list(SPINETRACK37.names)
        names[3], names[4] = names[4], names[3]
        skeleton_for_names(names, SPINETRACK37)
    with pytest.raises(ValueError, match="17 keypoint names"):
        skeleton_for_names(list(COCO17.names), SPINETRACK37)


def test_custom_layouts():
    custom = skeleton_for_names(["neck", "hip", "left_knee"])
    assert custom.name == "custom" and custom.sigmas.tolist() == [0.04, 0.07, 0.087]
    other = skeleton_for_names(["a", "b"])
    assert other.sigmas.tolist() == [0.07, 0.07]
    with pytest.raises(ValueError):
        Skeleton("bad", ("a", "a"), np.array([0.1, 0.1]))


def test_to_category_is_one_based():
    cat = SPINETRACK37.to_category()
    assert cat["keypoints"] == list(SPINETRACK37.names)
    assert [15 + 1, 13 + 1] in cat["skeleton"]
    assert min(min(pair) for pair in cat["skeleton"]) >= 1
