"""Running a render: prepare and execute (``render``), one task's life (``tile``), the executors
(in-process and Ray), progress, the dry run's forecast and the halo-error measurement."""
