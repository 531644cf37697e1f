"""`itemlm bench`: the paper's experiments as a resumable grid of cells and a report."""
