"""The original LLaVA / LLaVA-Med v1.5 checkpoint format: conversion to and export from transformers' LLaVA."""
