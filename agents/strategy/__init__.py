"""What the learned strategy policies share: the action space and the look-ahead reward."""
