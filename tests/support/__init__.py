"""What the test tiers share: the CLI runners, sizes and type GUIDs, description builders,
loop-disk rigs, file trees, media contracts and servers. Nothing here is a test."""
