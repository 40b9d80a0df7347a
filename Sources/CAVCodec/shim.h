#pragma once
#include <errno.h>
#include <libavcodec/avcodec.h>
#include <libavutil/error.h>
#include <libavutil/frame.h>
#include <libavutil/log.h>
#include <libavutil/pixfmt.h>

/* AVERROR(EAGAIN) and AVERROR_EOF are macros Swift does not import. */
static inline int sfu_averror_eagain(void) { return AVERROR(EAGAIN); }
static inline int sfu_averror_eof(void) { return AVERROR_EOF; }
