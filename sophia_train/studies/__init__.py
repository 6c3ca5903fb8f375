"""Studies: what runs or reads many training runs. The fair optimizer benchmark (``benchmark``), the
CPU study (``cpu_study``), data-speedup fits (``speedup``), run comparison (``compare_runs``), the LR
blow-up search (``lr_search``), the memory table (``memory``) and the 2-D toy (``toy_2d``)."""
