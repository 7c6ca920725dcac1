"""depthnet_jax.common.rotations against independent references: scipy's Rotation for quaternions and Euler
angles, a point projected by hand for the rotation-only homography, cv2.warpPerspective for the warp."""

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from depthnet_jax.common import rotations


def test_quaternions_and_euler_angles_match_scipy():
  rng = np.random.default_rng(0)
  q = Rotation.random(20, random_state=1).as_quat(scalar_first=True)
  np.testing.assert_allclose(rotations.quaternion_to_matrix(q), Rotation.from_quat(q, scalar_first=True).as_matrix(),
                             atol=1e-12)
  back = rotations.matrix_to_quaternion(rotations.quaternion_to_matrix(q))
  np.testing.assert_allclose(np.abs(np.sum(back * q, axis=1)), 1, atol=1e-12)   # q and -q are one rotation
  assert np.all(back[:, 0] >= 0)
  roll, pitch, yaw = rng.uniform(-80, 80, (3, 10))
  np.testing.assert_allclose(rotations.euler_to_matrix(roll, pitch, yaw),
                             Rotation.from_euler('ZYX', np.stack([yaw, pitch, roll], 1), degrees=True).as_matrix(),
                             atol=1e-12)
  np.testing.assert_allclose(rotations.axis_angle([0, 0, 2], 90), Rotation.from_rotvec([0, 0, np.pi / 2]).as_matrix(),
                             atol=1e-12)


def test_forward_and_down_cameras_on_a_frd_body():
  forward = rotations.camera_to_body()
  np.testing.assert_allclose(forward @ [0, 0, 1], [1, 0, 0])   # camera z = body x (forward)
  np.testing.assert_allclose(forward @ [1, 0, 0], [0, 1, 0])   # camera x = body y (right)
  down = rotations.camera_to_body(0, -90, 0)
  np.testing.assert_allclose(down @ [0, 0, 1], [0, 0, 1], atol=1e-12)   # looks along body z (down)


@pytest.mark.parametrize('size', [(64, 64), (96, 48)])
def test_homography_maps_a_world_point_between_the_two_views(size):
  w, h = size
  k = rotations.intrinsics(w, h, 90)
  assert k[0, 2] == (w - 1) / 2 and k[0, 0] == pytest.approx(w / 2)
  ra, rb = rotations.axis_angle([0.3, 1, 0.2], 4), rotations.axis_angle([1, 0, 0.5], -3)
  point = np.array([1.5, -0.7, 12.0])   # world, both cameras at the origin
  pa, pb = k @ (ra.T @ point), k @ (rb.T @ point)
  mapped = rotations.homography(k, ra, rb) @ pb
  np.testing.assert_allclose(mapped[:2] / mapped[2], pa[:2] / pa[2], atol=1e-9)


def test_warp_equals_cv2_warp_perspective_and_masks_the_border():
  rng = np.random.default_rng(0)
  image = cv2.GaussianBlur(rng.integers(0, 255, (48, 64, 3), np.uint8), (5, 5), 2)
  k = rotations.intrinsics(64, 48, 90)
  h = rotations.homography(k, rotations.axis_angle([0, 1, 0], 4), np.eye(3))
  for interpolation in (cv2.INTER_LANCZOS4, cv2.INTER_LINEAR):   # the default, then another
    warped, valid = rotations.warp(image, h, **({} if interpolation == rotations.WARP else
                                                  {'interpolation': interpolation}))
    ref = cv2.warpPerspective(image, h, (64, 48), flags=interpolation | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    assert 0.8 < valid.mean() < 0.99   # a 4 degree turn loses a band at one side
    assert np.abs(warped.astype(int) - ref).max() <= 2   # outside too (border replicated); cv2 rounds its taps
  assert not valid[:, 0].any() or not valid[:, -1].any()
