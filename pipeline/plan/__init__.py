"""What a `segpipe run` task reads of the run that scheduled it: the dataset spec and each format's run facts
(`formats`), the shard plan (`shards`), the GPU slots (`gpu_slots`) and the per-image progress lines
(`progress`). It sits below `segpipe.tasks` and `segpipe.runner`, so tasks never import the runner that builds
them (docs/architecture.md)."""
