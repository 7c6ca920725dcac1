"""The Still Box renderer: procedural Still-Box-like scenes seen by a translating camera, with z-depth in metres.

    python -m tfds_stillbox.render --out DIR --resolution 64 --scenes 1000 --seed 0   # see --help, and cli.py

Each name is imported from the module that owns it (this package re-exports nothing):

    shapes    ray-primitive intersection: Ellipsoid (Sphere), Box, Room, Frustum, Torus, each with
              `intersect(origins, directions) -> (t, normal)`
    textures  solid procedural textures (Material) and Lambert shading
    raycast   the pinhole camera (as_resolution, check_fov, pixel_slopes) and the vectorised ray caster
              (render_frames, render_frame): all the frames of a scene at once
    scenes    random Still-Box-like worlds (sample_world -> World) and their rendering (render_scene -> Scene)
    poses     a turning camera (rotation_path), a trajectory CSV's poses, the scene in the camera's axes
    camera    the posing and lens options checked (check_posing), recorded in metadata (posing_args), the lens
              written beside the frames (write_calibration)
    distortion  the frames as a radial-tangential or fisheye lens sees them (--distortion) over the pinhole depth
    checks    the ranges the command line and the TFDS builder's configs check (resolution, fov, frames, step,
              depth range)
    export    what is written: the Still Box tree (export) with motion logs, TFDS examples (tfds_examples), the
              contact sheet
    cli       the command line (main), run by __main__.py
"""

__all__: list[str] = []
