// Every op family in one include.
#pragma once
#include "engine/autograd.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/image.h"
#include "engine/ops/linalg.h"
#include "engine/ops/index.h"
#include "engine/ops/loss.h"
#include "engine/ops/nn.h"
#include "engine/ops/reduce.h"
#include "engine/ops/shape.h"
#include "engine/rng.h"
#include "engine/tensor.h"
