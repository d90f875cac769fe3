"""What dj-staged needs of a store beyond DataJoint's backend: the filesystems behind write handles."""
