// The model from the README, built with the pipe-style builder; prints its summary.
#include <iostream>

#include "axon/model.h"

int main() {
  using namespace axon;
  Model model = input({-1, 784}) | dense(128) | dense(10, Activation::softmax);
  std::cout << summary(model);
  return 0;
}
