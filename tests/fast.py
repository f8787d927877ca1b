"""The settings that make a fit take a fraction of a second, for every test (the API,
command-line and viewer tests all start from these)."""

#: A tiny ensemble (3 members x 4 iterations), one single-threaded fitting thread (never
#: torch's own pool: it slows down tenfold when the other core is busy), fixed seed, on
#: the CPU: there a run with the same seed repeats bitwise, which many tests compare (on
#: CUDA a prior's fit does not; tests/test_cuda.py checks the GPU on its own terms).
TINY = dict(n_iter=4, n_members=3, n_threads=1, seed=0, device="cpu")

#: The same as command-line flags.
TINY_FLAGS = [
    "--iterations",
    "4",
    "--members",
    "3",
    "--threads",
    "1",
    "--seed",
    "0",
    "--device",
    "cpu",
]
