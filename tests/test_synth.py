import numpy as np

from spinetrack_tools import synth
from spinetrack_tools.biomech.model import default_model, forward_kinematics
from spinetrack_tools.biomech.poses import sample_poses
from spinetrack_tools.coco import parse_file
from spinetrack_tools.persons import Persons
from spinetrack_tools.skeleton import SPINETRACK37
from spinetrack_tools.validate import validate


def test_deterministic_for_a_seed():
    assert synth.generate(20, seed=3) == synth.generate(20, seed=3)
    assert synth.generate(20, seed=3) != synth.generate(20, seed=4)
    a = synth.corrupt(synth.generate(50, seed=1), 0.3, seed=2)
    b = synth.corrupt(synth.generate(50, seed=1), 0.3, seed=2)
    assert a == b


def test_output_is_valid_coco_with_all_postures_and_visibilities():
    data = synth.generate(300, seed=2, persons_per_image=(2, 4))
    assert validate(parse_file(data)).findings == []
    ds = Persons.from_coco(data)
    v = ds.keypoints[..., 2]
    assert set(np.unique(v)) == {0, 1, 2}
    assert (ds.keypoints[v == 0][:, :2] == 0).all()
    assert {a["posture"] for a in data["annotations"]} == set(synth.POSTURES)
    per_image = np.bincount(ds.image_ids)
    assert per_image.max() <= 4
    w, h = ds.image_size()
    inside = (ds.keypoints[..., 0] >= 0) & (ds.keypoints[..., 0] < w[:, None]) & (ds.keypoints[..., 1] < h[:, None])
    assert inside[v > 0].all()


def test_forward_kinematics_keeps_segment_lengths():
    model = default_model()
    rng = np.random.default_rng(0)
    angles, root, _ = sample_poses(model, 200, rng)
    pts, _ = forward_kinematics(model, angles, root)
    rest, _ = forward_kinematics(model, np.zeros_like(angles[:1]), np.eye(3)[None])
    sk = SPINETRACK37
    for a, b in [("left_knee", "left_ankle"), ("right_shoulder", "right_elbow"), ("neck", "left_shoulder")]:
        i, j = sk.index(a), sk.index(b)
        d = np.linalg.norm(pts[:, i] - pts[:, j], axis=1)
        d0 = np.linalg.norm(rest[0, i] - rest[0, j])
        assert np.allclose(d, d0), (a, b)
    assert np.allclose(rest[0], model.markers - model.joints[0])  # pelvis joint centre at the origin


def test_inverted_postures_are_upside_down():
    data = synth.generate(60, seed=4, postures=["inverted"], persons_per_image=(1, 1))
    ds = Persons.from_coco(data)
    head, ankle = SPINETRACK37.index("head"), SPINETRACK37.index("left_ankle")
    both = (ds.keypoints[:, head, 2] > 0) & (ds.keypoints[:, ankle, 2] > 0)
    below = ds.keypoints[both, head, 1] > ds.keypoints[both, ankle, 1]  # image y grows downwards
    assert below.mean() > 0.8


def test_rendered_images_are_deterministic_and_valid(tmp_path):
    from PIL import Image

    from spinetrack_tools.validate import validate_file

    a = synth.generate(6, seed=11, image_dir=tmp_path / "a", fk="numpy")
    b = synth.generate(6, seed=11, image_dir=tmp_path / "b", fk="numpy")
    assert a == b
    for im in a["images"]:
        assert (tmp_path / "a" / im["file_name"]).read_bytes() == (tmp_path / "b" / im["file_name"]).read_bytes()
        with Image.open(tmp_path / "a" / im["file_name"]) as f:
            assert f.size == (im["width"], im["height"]) and f.format == "JPEG"
    import json
    (tmp_path / "a.json").write_text(json.dumps(a))
    assert validate_file(tmp_path / "a.json", images_dir=tmp_path / "a").findings == []


def test_the_spine_is_visible_where_the_back_faces_the_camera(tmp_path):
    """Vertebral marks (light dots on a dark back line) sit on the spine keypoints of people seen from behind."""
    from PIL import Image

    data = synth.generate(40, seed=5, persons_per_image=(1, 1), postures=["standing"], image_dir=tmp_path,
                          fk="numpy")
    chain = SPINETRACK37.spine_chain
    bright, total = 0, 0
    for ann in data["annotations"]:
        kp = np.array(ann["keypoints"], dtype=float).reshape(-1, 3)
        if not (kp[chain, 2] == 2).all():
            continue  # the back is not towards the camera
        with Image.open(tmp_path / f"{ann['image_id']:012d}.jpg") as im:
            px = np.asarray(im.convert("L"), dtype=float)
        for x, y, _ in kp[chain]:
            total += 1
            bright += px[int(round(y)), int(round(x))] > 190
    assert total >= 45
    assert bright / total > 0.6
