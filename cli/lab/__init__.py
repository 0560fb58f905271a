"""Real processes to drive from outside, for the test suite and the benchmarks: the whole stack with
short time constants (``stack``), a throwaway PostgreSQL cluster (``postgres``), an S3 API server
(``s3``), and faults done to a running stack with what they cost (``faultlab``, ``faults``). No
``imgq`` command uses them."""
