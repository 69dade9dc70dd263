# The R peers of the suite, mirai and crew over TLS, measured as benchmarks/measures.py does.
#
#   Rscript peers.R SYSTEM MEASURE name=value ...
#
# takes one measure once and prints its value on the last line (the drivers mirai.py and
# crew.py read it). The packages come from .bench/R (R_LIBS_USER), installed by `make bench`.

arguments <- commandArgs(trailingOnly = TRUE)
peer <- arguments[[1]]
measure <- arguments[[2]]
size <- list()
for (pair in arguments[-(1:2)]) {
  parts <- strsplit(pair, "=", fixed = TRUE)[[1]]
  size[[parts[[1]]]] <- as.numeric(parts[[2]])
}

now <- function() as.numeric(Sys.time())

negate <- function(x) -x
echo <- function(x) x
nap <- function(x) Sys.sleep(x)
process_id <- function(x) {
  if (x > 0) Sys.sleep(x)
  Sys.getpid()
}

# Peak resident memory (VmHWM) in MB of this R process and of its children (a dispatcher).
peak_megabytes <- function() {
  peak <- function(pid) {
    status <- readLines(sprintf("/proc/%s/status", pid))
    line <- grep("^VmHWM:", status, value = TRUE)
    as.numeric(strsplit(trimws(sub("VmHWM:", "", line)), " +")[[1]][[1]]) * 1024 / 1e6
  }
  children <- Filter(function(pid) {
    stat <- tryCatch(readLines(sprintf("/proc/%s/stat", pid)), error = function(e) "")
    fields <- strsplit(sub(".*\\) ", "", stat), " ")[[1]]
    length(fields) > 1 && fields[[2]] == as.character(Sys.getpid())
  }, grep("^[0-9]+$", list.files("/proc"), value = TRUE))
  peak("self") + sum(vapply(children, peak, numeric(1)))
}

# A pool: map(f, items) gives the values in input order; call(f, item) runs one task.
open_mirai <- function(workers) {
  mirai::daemons(url = mirai::host_url(tls = TRUE))
  if (workers > 0) mirai::launch_local(workers)
  list(
    map = function(f, items) mirai::mirai_map(items, f)[],
    call = function(f, item) mirai::mirai(f(x), f = f, x = item)[],
    push = function(f, item) mirai::mirai(f(x), f = f, x = item),
    close = function() mirai::daemons(0)
  )
}

open_crew <- function(workers) {
  controller <- crew::crew_controller_local(
    workers = max(workers, 1),
    seconds_idle = 600,
    tls = crew::crew_tls(mode = "automatic")
  )
  controller$start()
  list(
    map = function(f, items) {
      controller$map(command = f(x), iterate = list(x = items), data = list(f = f))$result
    },
    call = function(f, item) {
      controller$push(command = f(x), data = list(f = f, x = item))
      controller$wait(mode = "all")
      controller$pop()$result[[1]]
    },
    push = function(f, item) {
      controller$push(command = f(x), data = list(f = f, x = item), scale = FALSE)
    },
    close = function() controller$terminate()
  )
}

suppressPackageStartupMessages(loadNamespace(peer))  # no clock counts the package's loading
open_pool <- switch(peer, mirai = open_mirai, crew = open_crew, stop("unknown peer ", peer))

until_all_answered <- function(pool, workers, seconds) {
  deadline <- now() + 600
  seen <- integer(0)
  while (length(unique(seen)) < workers) {
    if (now() > deadline) stop("not every worker answered in time")
    seen <- c(seen, unlist(pool$map(process_id, rep(seconds, workers))))
  }
}

efficiency <- function(pool, workers) {
  started <- now()
  pool$map(nap, rep(size$seconds, size$tasks))
  size$tasks * size$seconds / workers / (now() - started)
}

measured <- function() {
  if (measure == "memory") {
    pool <- open_pool(0)  # no worker: every task stays queued
    on.exit(pool$close())
    for (number in seq_len(size$tasks)) pool$push(negate, number)
    return(peak_megabytes())
  }
  workers <- if (is.null(size$workers)) 2 else size$workers
  started <- now()
  pool <- open_pool(workers)
  on.exit(pool$close())
  until_all_answered(pool, workers, if (is.null(size$seconds)) 0 else size$seconds)
  switch(measure,
    startup = now() - started,
    tasks = {
      pool$map(negate, seq_len(200))
      started <- now()
      pool$map(negate, seq_len(size$tasks))
      size$tasks / (now() - started)
    },
    round_trip = {
      for (number in seq_len(20)) pool$call(negate, number)
      samples <- vapply(seq_len(size$calls), function(number) {
        started <- now()
        pool$call(negate, number)
        now() - started
      }, numeric(1))
      median(samples) * 1000
    },
    sleep = efficiency(pool, workers),
    wide = efficiency(pool, workers),
    payload = {
      payload <- as.raw(sample.int(256, size$megabytes * 1e6, replace = TRUE) - 1)
      pool$map(echo, rep(list(payload), workers))
      started <- now()
      pool$map(echo, rep(list(payload), size$tasks))
      2 * size$tasks * length(payload) / 1e6 / (now() - started)
    },
    stop("unknown measure ", measure)
  )
}

cat(format(measured(), digits = 10), "\n")
