"""Where the order book's state lives and the book of second S is computed: the stateful
processor Spark calls per state partition (``processor``, the state's layout in Spark),
what a partition does with a batch (``partition``), the book of each second and the
snapshot clock (``book_of_second``), the partition's bookkeeping (``meta``), its working
copy in memory (``working_copy``) and the per-partition process that keeps it
(``server``)."""
