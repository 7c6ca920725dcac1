"""JAX-free utilities every layer uses: one-line user errors and range checks (`cli`), atomic files (`atomic`),
progress (`progress`), the persistent compilation cache (`compile_cache`), the data's conventions
(`conventions`), the pinhole camera (`geometry`) and the depth colormaps (`colormaps`). Standard library, NumPy
and OpenCV only: train.py and infer.py import them before JAX starts. Imports nothing else of the project."""
