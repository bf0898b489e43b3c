"""Running one target across the ranks of MLX's distributed group (`mlx.launch`):
pipeline.py (the split and the messages), shard.py (each rank keeps its layers),
runner.py (rank 0's target runner), worker.py (the other ranks' loop)."""
