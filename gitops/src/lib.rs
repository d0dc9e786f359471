//! nexus-gitops: git sources (git2), tree reading, commit to change set, `plan` rendering and
//! watchers (notify for local paths, polling and webhooks for remotes).
