// @example README.md 1
