"""One rank of the 2-process gloo test in test_train.py (run with RANK, WORLD_SIZE, MASTER_* set).

Usage: python ddp_worker.py OUT_DIR. Trains the small CNN of test_train.py through fit and saves
this rank's final weights, history and log lines to OUT_DIR/rank<RANK>.pt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import quadrant_data, small_cnn  # noqa: E402

from d2lcnn import train  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    rank = int(os.environ["RANK"])
    torch.set_num_threads(1)
    model = small_cnn(seed=rank)  # different on purpose: DDP must start both ranks from rank 0's
    lines: list[str] = []
    history = train.fit(
        model,
        quadrant_data(),
        epochs=2,
        lr=0.1,
        device="cpu",
        log=lines.append,
        checkpoint=out / "run.pt",
    )
    torch.save(
        {"state": model.state_dict(), "history": history.as_dict(), "lines": lines},
        out / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
