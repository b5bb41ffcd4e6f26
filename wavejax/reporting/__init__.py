"""What a run reports: fold results and summaries, the paper's Table 1 layout, figures."""
